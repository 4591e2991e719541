"""The rules: each a small, pure, named step ``(facts, state) -> None | Dropped``."""
