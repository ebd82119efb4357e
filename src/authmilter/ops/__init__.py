"""Operations: logging, metrics, systemd notification."""
