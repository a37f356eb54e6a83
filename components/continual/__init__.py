"""The continual-learning loop: fine-tune from the champion on new windows, gate, promote, replay history."""
