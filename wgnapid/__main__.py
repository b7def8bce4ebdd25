from wgnapid.cli import main

raise SystemExit(main())
