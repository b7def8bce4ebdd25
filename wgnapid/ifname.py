"""Link names as the kernel handles them: bytes, and the kernel's own rule.

The kernel (net/core/dev.c, dev_valid_name) accepts any name of 1-15 bytes
that is not "." or "..", and holds no "/", ":", NUL or byte for which the
kernel's isspace() is true. Its ctype table (lib/ctype.c) is Latin-1, so
besides ASCII's space, \\t, \\n, \\v, \\f and \\r, byte 0xA0 counts as a space
too: "a\\xa0b", and so every UTF-8 name holding 0xA0 ("à" is C3 A0), is
refused, while 0xFF or U+2003 (E2 80 83) are not. Seen on 6.18 through
RTM_NEWLINK (tests/integration/test_names.py checks this table against the
running kernel). Netlink and sysfs carry the raw bytes.

Inside wgnapid a name is a ``str`` decoded from those bytes with UTF-8 and
``surrogateescape``: lossless (``encode`` gives back the kernel's bytes),
equal to the plain text for every UTF-8 name, and matched by the policy's
globs like any string. It is turned back into bytes for every system call
(openat), escaped for text (logs, the terminal) and given as hex beside the
text in JSON.
"""

from __future__ import annotations

IFNAMSIZ = 16  # including the NUL: 15 bytes at most
# isspace() of the kernel's lib/ctype.c: \t \n \v \f \r, space and 0xA0 (Latin-1 NBSP).
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")
_FORBIDDEN = _KERNEL_SPACE | frozenset(b"/:\0")


def decode(raw: bytes) -> str:
    """The kernel's bytes as wgnapid's name string (lossless)."""
    return raw.decode("utf-8", "surrogateescape")


def encode(name: str) -> bytes:
    """A name string back to the kernel's bytes (inverse of ``decode``)."""
    return name.encode("utf-8", "surrogateescape")


def problem(name: str | bytes) -> str | None:
    """None when the kernel would accept this name (dev_valid_name), else why not.

    Checked before a name is ever used as a path component, so that no name
    can reach outside its directory.
    """
    if isinstance(name, str):
        try:
            raw = encode(name)
        except UnicodeEncodeError:
            return f"name {printable(name)} cannot be turned into the kernel's bytes"
    else:
        raw = name
    if not raw:
        return "empty interface name"
    if len(raw) >= IFNAMSIZ:
        return f"interface name {printable(raw)} is longer than {IFNAMSIZ - 1} bytes"
    if raw in (b".", b".."):
        return f"interface name {printable(raw)} is not allowed"
    bad = sorted({b for b in raw if b in _FORBIDDEN})
    if bad:
        return f"interface name {printable(raw)} holds byte(s) the kernel refuses: " + " ".join(
            f"0x{b:02x}" for b in bad)
    return None


def valid(name: str | bytes) -> bool:
    """Whether the kernel would accept this name (see ``problem``)."""
    return problem(name) is None


def printable(name: str | bytes) -> str:
    """The name as text for logs and the terminal: printable characters as they
    are, everything else (bytes that are not UTF-8, control and space
    characters other than " ", backslash) escaped as \\xNN, \\uNNNN."""
    text = decode(name) if isinstance(name, bytes) else name
    if text.isprintable() and "\\" not in text:
        return text  # the common case, no copy
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def json_fields(name: str) -> dict:
    """A name for JSON: "name" is the text (exact for UTF-8 names; bytes that are
    not UTF-8 shown as \\xNN), "name_hex" the kernel's bytes, always exact."""
    raw = encode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
    return {"name": text, "name_hex": raw.hex()}
