"""SCPO: constrained policy optimisation by projection onto a sampled, certified region."""
