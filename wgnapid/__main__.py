from wgnapid.entry import main

raise SystemExit(main())
