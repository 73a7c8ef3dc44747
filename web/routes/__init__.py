"""Route handlers, grouped by area; ``web.app`` wires them."""
