"""Rendering: figure specs -> PNG, results + outline -> Deck -> notebook -> HTML."""
