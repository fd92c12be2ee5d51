from token_service.edge.client_address import client_ip


def test_the_entry_the_load_balancer_appended_not_the_ones_the_client_sent():
    """The load balancer appends "<client-ip>,<load-balancer-ip>": earlier entries are the client's choice."""
    assert client_ip("6.6.6.6, 203.0.113.9, 10.0.0.1", "10.9.9.9") == "203.0.113.9"
    assert client_ip("203.0.113.9,10.0.0.1", "10.9.9.9") == "203.0.113.9"
    assert client_ip("2001:db8::1, 203.0.113.9,10.0.0.1", "10.9.9.9") == "203.0.113.9"


def test_without_a_load_balancers_pair():
    assert client_ip("203.0.113.9", "10.9.9.9") == "10.9.9.9"  # a lone entry is the caller's word
    assert client_ip("", "10.9.9.9") == "10.9.9.9"
