"""The base model: fetched from the hub, a URL or disk, converted once, described by its configs."""
