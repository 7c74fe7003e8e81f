"""Everything content-addressed: blob store, tags, cache keys, layer tars, archive formats."""
