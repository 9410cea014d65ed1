"""The ScaiVault API client: requests, retries, error translation and the token."""
