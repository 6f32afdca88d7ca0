"""Verification of an exported control law: integrity, equivalence, closed loop, falsification, reachability."""
