"""reprlab: visual representation learning experiments on Ray."""
