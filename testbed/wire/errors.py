"""The codec's one error type: malformed or unencodable data, naming the field at fault."""


class WireError(ValueError):
    """Raised for bytes that do not decode, or values that do not encode.

    `field` names the offending field (for example ``"tcp.data_offset"`` or
    ``"mptcp.dss.length"``) so that a middlebox log or a test can say exactly what was wrong.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
