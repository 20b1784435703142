"""Identity: a Keystone v3 subset (password tokens, projects, users, roles)."""
