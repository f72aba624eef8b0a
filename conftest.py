# Makes `engine` importable when pytest is run from the repository root.
