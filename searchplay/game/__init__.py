"""The self-play game: prompts, seeds, question extraction and filters, verification, rewards, pool."""
