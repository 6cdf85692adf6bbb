"""The WidowX 250 6DOF description: kinematic facts shared by the simulated and the real arm."""
