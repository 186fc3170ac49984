"""Connections to the outside: SSH tunnels, the MySQL source, storage and warehouses."""
