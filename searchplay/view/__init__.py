"""The run viewer: `searchplay view` (a local web page over run directories) and `searchplay report` (one HTML file)."""
