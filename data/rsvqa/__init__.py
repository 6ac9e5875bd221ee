"""RSVQA-LR and RSVQA-HR visual question answering (images/questions/answers JSON with ids)."""
