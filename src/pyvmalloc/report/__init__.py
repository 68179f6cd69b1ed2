"""Reports over a model: fragmentation metrics and what-if replays."""
