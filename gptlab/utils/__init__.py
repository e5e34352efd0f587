"""Small helpers shared by every part of gptlab (atomic file writes, clear errors)."""
