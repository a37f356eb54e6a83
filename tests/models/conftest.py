from recloop_data import item_text, movielens, trained  # noqa: F401  (session fixtures shared with tests/training)
