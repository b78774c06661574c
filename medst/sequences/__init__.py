"""sequences stage."""
