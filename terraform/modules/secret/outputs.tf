output "id" {
  description = "Secret id: projects/PROJECT/secrets/SECRET_ID."
  value       = google_secret_manager_secret.this.id
}

output "secret_id" {
  description = "Secret id (short name)."
  value       = google_secret_manager_secret.this.secret_id
}
