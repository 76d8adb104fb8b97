"""Actions plugins (built by later work; the hook exists now)."""
