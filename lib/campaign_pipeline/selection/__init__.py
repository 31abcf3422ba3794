"""Selection: allocate eligible scored fans to markets, never over capacity, deterministically."""
