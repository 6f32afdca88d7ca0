"""Plant models: expression parser, CasADi dynamics, linearisation."""
