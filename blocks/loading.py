"""Load a saved block by the name a flow parameter gives, with a clear error."""

from __future__ import annotations

from prefect.blocks.core import Block

from dreambooth_core.errors import ConfigError


def load_block(kind: type[Block], name: str, field: str) -> Block:
    try:
        return kind.load(name)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        slug = kind.get_block_type_slug()
        raise ConfigError(
            f"--{field.replace('_', '-')} {name!r}: there is no {slug} block named {name!r} on "
            f"this Prefect server. Register the block types with 'prefect block register -m "
            f"blocks', create a {slug} block named {name!r} (UI: Blocks, or in Python: "
            f"{kind.__name__}(...).save({name!r})), or pass the name of an existing one.") from None
