"""The sales organisation: owners (reps), teams, who counts in which team, and scope names."""
