"""The authors' corrected PTB language model (google-research `enas_lm`)."""
