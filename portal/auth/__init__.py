"""People, their login identities and their roles."""
