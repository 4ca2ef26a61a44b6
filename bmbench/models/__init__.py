"""nn.Modules only, no I/O: backbone + FPN, the FCOS detector, the four mask heads, paste."""
