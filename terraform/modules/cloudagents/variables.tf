variable "project_id" {
  description = "Project to deploy into."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for Cloud Run, Cloud Tasks and the context bucket; also CLOUDAGENTS_LOCATION."
  type        = string
}

variable "image" {
  description = "Container image for every service (one image; SERVICE picks the entry point). Used on creation; CI rolls later images."
  type        = string
}

variable "api_invokers" {
  description = "Principals allowed to call the api (roles/run.invoker), e.g. user:alice@example.com, group:agents@example.com, serviceAccount:ci@PROJECT.iam.gserviceaccount.com."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.api_invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "The api is never public: allUsers and allAuthenticatedUsers are refused."
  }
  validation {
    condition     = alltrue([for m in var.api_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):", m))])
    error_message = "api_invokers must be IAM members such as user:EMAIL, group:EMAIL or serviceAccount:EMAIL."
  }
}

variable "topology" {
  description = "The generated topology (terraform/environments/*/topology.auto.tfvars.json from scripts/gen_terraform_topology.py). Bucket names may contain {project}."
  type = object({
    generated_by = optional(string)
    workspace    = string
    topics = map(object({
      role        = string
      description = string
      publishers  = list(string)
      # Kept for consumers that are not services (the tool audit trail, graph pull workers).
      pull_subscriptions = optional(list(string), [])
      # Graph node-type topics: their workers' clients extend a short deadline while a task runs.
      pull_ack_deadline_seconds = optional(number)
      push_subscriptions = map(object({
        service                 = string
        path                    = string
        dead_letter_topic       = string
        ack_deadline_seconds    = number
        max_delivery_attempts   = number
        minimum_backoff_seconds = number
        maximum_backoff_seconds = number
      }))
    }))
    dead_letter_topics = map(object({
      description         = string
      source_subscription = string
      pull_subscriptions  = list(string)
      sink = object({
        name                    = string
        service                 = string
        path                    = string
        ack_deadline_seconds    = number
        minimum_backoff_seconds = number
        maximum_backoff_seconds = number
      })
    }))
    queues = map(object({
      service      = string
      path         = string
      max_attempts = number
      enqueuers    = list(string)
      # A graph node type's queue: its global capacity (tasks in flight at once).
      max_concurrent_dispatches = optional(number)
      node_type                 = optional(string)
    }))
    # Graph workflows: node types push-dispatched to the graph worker service (Cloud Tasks) and
    # node types pulled from their topics by workers outside Cloud Run.
    graph = optional(object({
      push_node_types = list(string)
      pull_node_types = list(string)
    }), { push_node_types = [], pull_node_types = [] })
    buckets = map(object({
      delete_after_days = number
      object_users      = list(string)
    }))
    secrets = map(object({
      accessors = list(string)
    }))
    services = map(object({
      source                      = string
      target                      = string
      http                        = bool
      publishes                   = list(string)
      buckets                     = list(string)
      enqueues                    = list(string)
      secrets                     = list(string)
      push_subscriptions          = list(string)
      task_queues                 = list(string)
      min_request_timeout_seconds = number
    }))
  })
  validation {
    condition = alltrue(flatten([
      for t in values(var.topology.topics) : [
        for s in values(t.push_subscriptions) :
        contains(keys(var.topology.services), s.service) && contains(keys(var.topology.dead_letter_topics), s.dead_letter_topic) && startswith(s.path, "/")
      ]
    ]))
    error_message = "Every push subscription must target a declared service at a /path and dead-letter to a declared dead-letter topic."
  }
  validation {
    condition = alltrue(flatten([
      [for t in values(var.topology.topics) : [for p in t.publishers : contains(keys(var.topology.services), p)]],
      [for q in values(var.topology.queues) : concat([contains(keys(var.topology.services), q.service)], [for e in q.enqueuers : contains(keys(var.topology.services), e)])],
      [for b in values(var.topology.buckets) : [for u in b.object_users : contains(keys(var.topology.services), u)]],
      [for s in values(var.topology.secrets) : [for a in s.accessors : contains(keys(var.topology.services), a)]],
    ]))
    error_message = "Publishers, enqueuers, object users, secret accessors and queue targets must be declared services."
  }
  validation {
    # Service account ids are at most 30 characters: "<workspace>-<service>".
    condition = alltrue([
      for k in keys(var.topology.services) : length("${var.topology.workspace}-${replace(k, "_", "-")}") <= 30
    ])
    error_message = "workspace is too long: <workspace>-<service> must fit a 30-character service account id."
  }
  validation {
    condition     = length([for s in values(var.topology.services) : s if s.http]) <= 1
    error_message = "At most one HTTP (public ingress) service is expected: the api."
  }
}

variable "firestore_ttl_fields" {
  description = "Firestore TTL policies by key: collection group and timestamp field (generated with the topology)."
  type = map(object({
    collection = string
    field      = string
  }))
  default = {}
}

variable "firestore_location" {
  description = "Firestore location (region or multi-region such as nam5); defaults to region. Immutable."
  type        = string
  default     = null
}

variable "firestore_point_in_time_recovery" {
  description = "Keep 7 days of Firestore point-in-time recovery."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect Cloud Run services and the Firestore database from deletion."
  type        = bool
  default     = true
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects (dev only)."
  type        = bool
  default     = false
}

variable "service_defaults" {
  description = "Cloud Run settings for every service unless service_settings overrides them."
  type = object({
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 10)
    concurrency     = optional(number, 80)
    timeout_seconds = optional(number, 300)
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
  })
  default = {}
}

variable "service_settings" {
  description = "Per-service overrides keyed by service name (api, run_executor, ...). A push service's timeout is raised to its subscriptions' ack deadline."
  type = map(object({
    min_instances   = optional(number)
    max_instances   = optional(number)
    concurrency     = optional(number)
    timeout_seconds = optional(number)
    cpu             = optional(string)
    memory          = optional(string)
  }))
  default = {}
}

variable "env" {
  description = "Extra plain environment variables for every service (e.g. CLOUDAGENTS_TOOL_MODULES)."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Enable the APIs the workload needs."
  type        = bool
  default     = true
}
