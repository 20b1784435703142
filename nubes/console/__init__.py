"""The console proxy (``nubes console-proxy``): browsers' websockets to guests' consoles."""
