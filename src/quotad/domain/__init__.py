"""The rules of quotad, free of any web framework or storage driver."""
