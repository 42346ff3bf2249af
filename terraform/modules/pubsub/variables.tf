variable "project_id" {
  description = "Project that owns the topic."
  type        = string
}

variable "name" {
  description = "Topic name."
  type        = string
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-_.~+%]{2,254}$", var.name)) && !startswith(var.name, "goog")
    error_message = "Topic names are 3-255 characters, start with a letter and do not start with goog."
  }
}

variable "labels" {
  description = "Labels on the topic and its subscriptions."
  type        = map(string)
  default     = {}
}

variable "kms_key_name" {
  description = "Cloud KMS key for CMEK; null uses Google-managed encryption."
  type        = string
  default     = null
}

variable "message_retention_duration" {
  description = "How long the topic keeps published messages (e.g. 86400s); null keeps none beyond subscriptions."
  type        = string
  default     = null
}

variable "push_subscriptions" {
  description = "Push subscriptions by name: endpoint, OIDC identity, retry and dead-letter settings."
  type = map(object({
    endpoint = string
    oidc = object({
      service_account_email = string
      audience              = optional(string)
    })
    dead_letter = object({
      topic                 = string
      max_delivery_attempts = number
    })
    retry = optional(object({
      minimum_backoff_seconds = optional(number, 10)
      maximum_backoff_seconds = optional(number, 600)
    }), {})
    ack_deadline_seconds       = optional(number, 60)
    message_retention_duration = optional(string, "604800s")
    labels                     = optional(map(string), {})
  }))
  default = {}
  validation {
    condition     = alltrue([for s in values(var.push_subscriptions) : startswith(s.endpoint, "https://")])
    error_message = "Push endpoints must be https URLs."
  }
  validation {
    condition = alltrue([
      for s in values(var.push_subscriptions) : s.ack_deadline_seconds >= 10 && s.ack_deadline_seconds <= 600
    ])
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
  validation {
    condition = alltrue([
      for s in values(var.push_subscriptions) :
      s.dead_letter.max_delivery_attempts >= 5 && s.dead_letter.max_delivery_attempts <= 100
    ])
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
  validation {
    condition = alltrue([
      for s in values(var.push_subscriptions) :
      s.retry.minimum_backoff_seconds >= 0 && s.retry.maximum_backoff_seconds <= 600 &&
      s.retry.minimum_backoff_seconds <= s.retry.maximum_backoff_seconds
    ])
    error_message = "Retry backoff must satisfy 0 <= minimum <= maximum <= 600 seconds."
  }
}

variable "sink_subscriptions" {
  description = "Push subscriptions of a dead-letter topic to the service that records what Pub/Sub gave up on: OIDC and retry, no dead-letter policy."
  type = map(object({
    endpoint = string
    oidc = object({
      service_account_email = string
      audience              = optional(string)
    })
    retry = optional(object({
      minimum_backoff_seconds = optional(number, 10)
      maximum_backoff_seconds = optional(number, 600)
    }), {})
    ack_deadline_seconds       = optional(number, 60)
    message_retention_duration = optional(string, "604800s")
    labels                     = optional(map(string), {})
  }))
  default = {}
  validation {
    condition     = alltrue([for s in values(var.sink_subscriptions) : startswith(s.endpoint, "https://")])
    error_message = "Push endpoints must be https URLs."
  }
}

variable "pull_subscriptions" {
  description = "Pull subscriptions by name (e.g. one on a dead-letter topic so parked messages are kept)."
  type = map(object({
    ack_deadline_seconds       = optional(number, 60)
    message_retention_duration = optional(string, "604800s")
    retain_acked_messages      = optional(bool, false)
    labels                     = optional(map(string), {})
  }))
  default = {}
}

variable "pubsub_service_agent" {
  description = "Email of the Pub/Sub service agent (service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com); needed when there are push subscriptions, which all dead-letter."
  type        = string
  default     = null
  validation {
    condition     = length(var.push_subscriptions) == 0 || var.pubsub_service_agent != null
    error_message = "pubsub_service_agent is required when push_subscriptions is not empty (dead-lettering needs it)."
  }
}

variable "iam" {
  description = "Role => members on the topic (authoritative per role)."
  type        = map(list(string))
  default     = {}
  validation {
    condition = alltrue(flatten([
      for members in values(var.iam) : [
        for m in members : !contains(["allUsers", "allAuthenticatedUsers"], m)
      ]
    ]))
    error_message = "allUsers and allAuthenticatedUsers may not be granted."
  }
}
