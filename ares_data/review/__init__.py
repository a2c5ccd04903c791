"""Curation: human labels (TUI review, Label Studio round trip) and agreement between labellers."""
