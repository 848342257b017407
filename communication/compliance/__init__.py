"""Personal data: the registry every app declares its data in, and the verbs built on it
(erasure, export, retention, the compliance report)."""
