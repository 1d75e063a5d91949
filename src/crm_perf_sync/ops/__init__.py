"""What an operator asks first: how is it doing (:mod:`.status`, :mod:`.metrics`) and is it set up
right (:mod:`.doctor`)."""
