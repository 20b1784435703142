"""Image: a Glance v2 subset (create, upload, show, list, delete)."""
