from token_service import WaitingRequests


def test_places_are_bounded_and_given_back():
    waiting = WaitingRequests(2)
    assert waiting.enter() and waiting.enter()
    assert not waiting.enter()  # the third is refused, and takes nothing
    assert waiting.in_flight == 2
    waiting.leave()
    assert waiting.enter()
    assert not waiting.enter()
