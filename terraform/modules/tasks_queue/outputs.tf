output "id" {
  description = "Queue id: projects/PROJECT/locations/LOCATION/queues/NAME."
  value       = google_cloud_tasks_queue.this.id
}

output "name" {
  description = "Queue name."
  value       = google_cloud_tasks_queue.this.name
}
