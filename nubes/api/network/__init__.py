"""The network service (a Neutron v2.0 subset): routes."""
