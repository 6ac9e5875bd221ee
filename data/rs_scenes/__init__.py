"""Class-per-folder remote-sensing scene classification sets (PatternNet, AID, ...), one config each."""
