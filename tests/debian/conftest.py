"""The Debian package tier's marker, registered here so that pyproject.toml stays as it is."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "deb: the Debian 13 package tier (debootstrap roots, dpkg-buildpackage, lintian, "
        "systemd 257 as PID 1); ./dev test-deb",
    )
