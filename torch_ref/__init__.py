"""The PyTorch reference: the same MLP as an nn.Module; autograd computes every gradient here."""
