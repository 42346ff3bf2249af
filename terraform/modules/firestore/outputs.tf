output "name" {
  description = "Database id."
  value       = google_firestore_database.this.name
}

output "ttl_fields" {
  description = "TTL policies by key, as collection/field."
  value       = { for k, f in google_firestore_field.ttl : k => "${f.collection}/${f.field}" }
}
