"""Partner institutions, their e-mail domains, and who is affiliated with them."""
