"""What training holds on the GPU: the estimate, --memory auto's plan, and the ways to hold less."""
