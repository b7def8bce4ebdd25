"""What the systemd tier measured: name -> (value, unit); printed at the end of the run."""

MEASURED: dict[str, tuple[float, str]] = {}


def measure(name: str, value: float, unit: str = "s") -> None:
    MEASURED[name] = (value, unit)
    print(f"measured: {name}: {value:.3f} {unit}")
