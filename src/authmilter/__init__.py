"""authmilter: one milter for DKIM signing and SPF/DKIM/DMARC/ARC verification."""
__version__ = "0.1.0"
