"""The phases of a run, each a module with `async def run(ctx: Context) -> None`."""
