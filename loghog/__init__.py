"""loghog: ship Python logging records to a loghogd server."""
