"""Answer matching (normalisation, EM, F1) and the LLM judge."""
